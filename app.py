"""EMCL Explorer: the Gradio app. The page is built in ui/, the work done in emcl/.

    python app.py                       # the bundled demo world and demo checkpoints
    python app.py --data DIR [--split test] [--checkpoint DIR] [--base-checkpoint DIR]
    python app.py --data DIR --model ViT-B-32 --pretrained /path/open_clip_model.safetensors
    python app.py --host 0.0.0.0 --auth-file auth.txt [--allow-uploads]   # for a team

Serves on 127.0.0.1:7860 unless --host/--port say otherwise; never creates a share link.
Beyond loopback it needs --auth-file (python -m emcl auth add USER) or an explicit --no-auth.
"""

from __future__ import annotations

import os
import sys
import threading
import time

SWITCH_INTERVAL_S = 0.001


def main(argv: list[str] | None = None) -> None:
    # OpenMP threads that finish early sleep rather than spin: a server's threads share the
    # cores (searches, metrics, the page), and spinning ones take them from the rest.
    # Read once, when torch loads OpenMP.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Imported here, not at the top: the demo world's render workers (multiprocessing's
    # spawn) import this file, and they need neither torch nor Gradio.
    import torch

    from emcl.explorer.setup import load_explorer
    from emcl.runtime import flush_subnormals
    from ui.app import build_demo, lab_from, launch_settings, queued
    from ui.flags import parse_args, serving_from, setup_from

    start = time.perf_counter()
    args = parse_args(argv)
    serving = serving_from(args)  # a bad password file stops here, before any model loads
    flush_subnormals()  # before any thread exists, so that every thread inherits it
    # Once, before any request thread exists; the cores this process may use (taskset, cgroups).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    # A search's Python steps wait for the GIL whenever a background computation holds it:
    # hand it over every millisecond rather than every five (docs/reliability.md §4).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    setup = setup_from(args)
    explorer = load_explorer(setup)
    demo = queued(build_demo(explorer, serving, lab=lab_from(setup, serving)))
    _, url, _ = demo.launch(prevent_thread_lock=True, **launch_settings(setup, explorer, serving))
    print(f"UI ready at {url} in {time.perf_counter() - start:.1f} s", flush=True)

    def warm_up() -> None:
        # The as-trained tables and the default word encodings, below the searches' priority.
        begun = time.perf_counter()
        explorer.warm_up()
        print(f"warm-up done in {time.perf_counter() - begun:.1f} s", flush=True)

    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
