"""`lab kernels build`, `lab images build`, `lab testcases build`: builds without a run."""

from __future__ import annotations

from lab import config as cfg
from lab import schema
from lab import plan
from lab.images import ensure_image
from lab.kernels import ensure_kernel
from lab.progress import Progress
from lab.testcases import ensure_testcase


def _selection(lab: schema.Lab, args) -> tuple[list[str], list[str], list[str]]:
    return plan.selection(lab, args.arch, args.kernel, getattr(args, "test", None))


def cmd_kernels_build(args) -> int:
    lab = cfg.load_lab()
    arches, kernels, _ = _selection(lab, args)
    progress = Progress()
    for a in arches:
        for k in kernels:
            art = ensure_kernel(lab, lab.arches[a], lab.kernels[k], progress)
            print(f"{a}/{k}: {art.version}: {art.image}")
    return 0


def cmd_images_build(args) -> int:
    lab = cfg.load_lab()
    arches = cfg.pick("arch", args.arch, lab.arches, lab.plan.arches)
    progress = Progress()
    for a in arches:
        image = ensure_image(lab, lab.arches[a], progress)
        print(f"{a}: {image.initramfs} (host key {image.host_key.split()[0]})")
    return 0


def cmd_testcases_build(args) -> int:
    lab = cfg.load_lab()
    arches = cfg.pick("arch", args.arch, lab.arches, lab.plan.arches)
    tests = cfg.pick("testcase", args.test, lab.testcases, lab.plan.testcases)
    for a in arches:
        for t in tests:
            binary = ensure_testcase(lab, lab.arches[a], lab.testcases[t])
            print(f"{a}/{t}: {binary.path}")
    return 0
