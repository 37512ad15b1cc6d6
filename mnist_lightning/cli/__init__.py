"""The command line: the entry point and its lazy dispatch (``main``), the one console (``console``), the
LightningCLI subclass (``lightning_cli``), its checks before anything runs (``checks``, ``ckpt_path``),
process set-up (``process``) and the warnings policy of a run (``quiet``)."""
