"""``python -m emcl.study`` names the command's one form, ``python -m emcl study``, and exits 2."""

if __name__ == "__main__":
    from emcl.cli import redirect

    redirect("study", "emcl.study")
