"""``python -m emcl.train`` names the command's one form, ``python -m emcl train``, and exits 2."""

if __name__ == "__main__":
    from emcl.cli import redirect

    redirect("train", "emcl.train")
