"""``python -m emcl.index`` names the command's one form, ``python -m emcl index``, and exits 2."""

if __name__ == "__main__":
    from emcl.cli import redirect

    redirect("index", "emcl.index")
