"""The nightly pipeline (``lnbench.nightly.pipeline``, run by ``scripts/nightly``) and its
regression triage (``lnbench.nightly.triage``). docs/nightly.md describes both."""
