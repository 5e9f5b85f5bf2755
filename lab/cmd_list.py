"""`lab list` and `lab doctor`: what is configured, built and installed."""

from __future__ import annotations

import json

from lab import config as cfg
from lab import schema
from lab import doctor
from lab.errors import ERROR_CODES, UserError
from lab.images import built_image, source_states
from lab import kernels
from lab.testcases import testcase_entry


def _built(lab: schema.Lab, arch: schema.Arch) -> dict:
    """What the cache holds for one arch: image, kernels (with their ccache counts), testcases."""
    entry: dict = {"image": None, "kernels": {}, "kernel_ccache": {}, "testcases": {}}
    try:
        image = built_image(lab, arch)
        entry["image"] = str(image) if image else None
        for tname, case in lab.testcases.items():
            t = testcase_entry(lab, arch, case)
            entry["testcases"][tname] = str(t.path / tname) if t.meta() else None
        for kname, source in lab.kernels.items():
            # hits and misses of the build that made it (none for kernels built before ccache)
            entry["kernels"][kname], entry["kernel_ccache"][kname] = kernels.listing(lab, arch, source)
    except UserError as exc:
        entry["missing"] = str(exc)
    return entry


def cmd_list(args) -> int:
    lab = cfg.load_lab()
    built = {name: _built(lab, arch) for name, arch in lab.arches.items()}
    data = {
        "plan": {"arches": list(lab.plan.arches), "kernels": list(lab.plan.kernels),
                 "testcases": list(lab.plan.testcases)},
        "arches": {n: {"description": a.description, "qemu": a.qemu.binary, "toolchain": a.toolchain.triple,
                       "built": built[n]} for n, a in lab.arches.items()},
        "kernels": {n: {"source": kernels.describe(k), "kind": type(k.kind).__name__}
                    for n, k in lab.kernels.items()},
        "guest_sources": _guest_sources(lab),
        "testcases": {n: {"description": t.description, "timeout_s": t.timeout_s, "needs": list(t.needs),
                          "kind": t.kind,
                          "params": {p.name: {"type": p.type, "default": p.default, "description": p.description}
                                     for p in t.params.values()}}
                      for n, t in lab.testcases.items()},
        "error_codes": dict(ERROR_CODES),
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("arches:")
    for n, a in data["arches"].items():
        image = a["built"]["image"] or "not built"
        print(f"  {n:12} {a['description']} (image: {image})")
        for k, path in a["built"]["kernels"].items():
            print(f"  {'':12}   kernel {k}: {path or 'not built'}")
        for t, path in a["built"]["testcases"].items():
            print(f"  {'':12}   testcase {t}: {path or 'not built'}")
    print("guest sources (Debian source packages of the guest image, as pinned in configs/lab.toml):")
    for n, g in data["guest_sources"].items():
        print(f"  {n:12} {g['version'] or g['problem']} (pinned: {g['pin']})")
    print("kernels:")
    for n, k in data["kernels"].items():
        print(f"  {n:12} {k['source']}")
    print("testcases:")
    for n, t in data["testcases"].items():
        print(f"  {n:12} {t['description']}")
        for p, spec in t["params"].items():
            print(f"  {'':12}   --param {p}=<{spec['type']}> (default {spec['default']}): {spec['description']}")
    print("error codes (of an ERROR cell; what a known ERROR in configs/lab.toml names with error = \"CODE\"):")
    for code, meaning in ERROR_CODES.items():
        print(f"  {code:22} {meaning}")
    return 0


def _guest_sources(lab: schema.Lab) -> dict[str, dict]:
    """Each guest source package: its pin, the version it resolves to now, or why it does not."""
    out = {}
    for name, state in source_states(lab).items():
        resolved = not isinstance(state, UserError)
        out[name] = {"pin": str(lab.guest_sources[name]), "version": state.version if resolved else None,
                     "suite": state.suite if resolved else None, "problem": None if resolved else str(state)}
    return out


def cmd_doctor(args) -> int:
    lab = cfg.load_lab()
    arches = cfg.pick("arch", args.arch, lab.arches, lab.plan.arches)
    kernels = cfg.pick("kernel", args.kernel, lab.kernels, lab.plan.kernels)
    results = doctor.checks(lab, arches, kernels)
    print(doctor.render(results))
    return 0 if all(c.ok for c in results) else 1
