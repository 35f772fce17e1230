"""The CPU kernels compiled at install: their ISA variants (`variants`) and the loader (`loader`)."""
