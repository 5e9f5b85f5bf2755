"""qemu-lab: boot kernels for many architectures under QEMU and run mm testcases in them."""
