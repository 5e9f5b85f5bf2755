"""What each job boots and pushes: kernel, guest image, testcase binaries, and the
provenance recorded on every cell of the job. Built (or found in the cache)
before any guest starts; a build failure is recorded on the jobs it affects."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lab.cache import sha256_file
from lab.schema import Lab
from lab.errors import BuildError, Failure
from lab.images import ImageArtifact, boot_initrd, ensure_image
from lab.kernels import KernelArtifact, ensure_kernel, resolve
from lab.plan import Job
from lab.progress import Notify
from lab.ssh import client_key
from lab.testcases import TestcaseBinary, ensure_testcase
from lab.hosttools import qemu_binary, qemu_version


@dataclass
class Artifacts:
    """What one job boots and pushes; a build error instead where a build failed."""

    kernel: KernelArtifact | None = None
    initrd: Path | None = None
    host_key: str = ""
    binaries: dict[str, TestcaseBinary] = field(default_factory=dict)
    error: Failure | None = None  # kernel or image build failed: every cell of the job is ERROR
    case_errors: dict[str, Failure] = field(default_factory=dict)  # a testcase failed to compile
    provenance: dict[str, str] = field(default_factory=dict)  # recorded on every cell of the job


def _attempt(build: Callable, progress: Notify) -> tuple:
    """Run one build; a BuildError is reported at once and returned as (None, its Failure)."""
    try:
        return build(), None
    except BuildError as exc:
        progress(f"ERROR: {exc}")
        return None, Failure.of(exc)


def prepare(lab: Lab, jobs: list[Job], progress: Notify) -> dict[str, Artifacts]:
    """Build (or find in the cache) every kernel, image and testcase binary the jobs need.

    A build failure is recorded on the jobs it affects; other jobs are unaffected.
    """
    _, public_key = client_key()
    images: dict[str, tuple] = {}
    binaries: dict[tuple[str, str], tuple] = {}
    prepared: dict[str, Artifacts] = {}
    for job in jobs:
        arch = job.arch
        if arch.name not in images:
            images[arch.name] = _attempt(lambda: ensure_image(lab, arch, progress), progress)
        image, image_error = images[arch.name]
        kernel, kernel_error = _attempt(lambda: ensure_kernel(lab, arch, job.kernel, progress), progress)
        art = Artifacts(kernel=kernel, error=image_error or kernel_error)
        art.provenance = _provenance(job, kernel, image)
        if image:
            modules = kernel.modules if kernel else None
            art.initrd, art.host_key = boot_initrd(image, public_key, modules), image.host_key
        for case in job.testcases:
            if (arch.name, case.name) not in binaries:
                binaries[arch.name, case.name] = _attempt(lambda: ensure_testcase(lab, arch, case), progress)
            binary, error = binaries[arch.name, case.name]
            if binary:
                art.binaries[case.name] = binary
                if binary.origin:  # which kernel source a kselftest binary was built from
                    art.provenance[f"testcase_{case.name}"] = binary.origin
            else:
                art.case_errors[case.name] = error
        prepared[job.name] = art
    return prepared


def _provenance(job: Job, kernel: KernelArtifact | None, image: ImageArtifact | None) -> dict[str, str]:
    """What every cell of the job ran on: QEMU, kernel source and build, guest image and its sources."""
    facts = {"qemu": qemu_version(qemu_binary(job.arch)), "kernel_source": resolve(job.kernel).description,
             "host": socket.gethostname()}
    if kernel:
        facts.update(kernel_release=kernel.version, kernel_key=kernel.key)
        if kernel.config:
            facts["config_sha256"] = sha256_file(kernel.config)
        facts.update(kernel.provenance)
    if image:
        facts["image_key"] = image.key
        facts.update({f"guest_source_{pkg}": offer for pkg, offer in image.sources.items()})
    return facts
