import sys

import click


class _BuildProgress:
    """TensorRT's build phases on stderr: one line rewritten in place on a terminal, each top-level phase's start
    on its own line in a log."""

    def __init__(self):
        self.stream = sys.stderr
        self.tty = self.stream.isatty()
        self.graph = None

    def __call__(self, graph, phase, done, total, top_level):
        if self.tty:
            self.stream.write(f"\r\033[Kbuild {graph}: {phase} {done}/{total}")
            self.stream.flush()
        elif top_level and done == 0:
            click.echo(f"build {graph}: {phase} ({total} steps)", err=True)
        self.graph = graph

    def end(self):
        if self.tty and self.graph is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()


@click.command("build")
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--graphs", default=None, metavar="NAMES",
              help="Comma-separated graphs to build (default: every graph of the artifact).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="TensorRT 11 takes precision from the ONNX graph: fp16 needs the artifact's FP16 graph variant, "
                   "and is refused without one (never an FP32 engine called FP16).")
@click.option("--min-batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--opt-batch", type=click.IntRange(min=1), default=None,
              help="The batch TensorRT tunes for (default: 8, or --max-batch if smaller).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Device buffers are allocated for this batch when an engine is opened.")
@click.option("--workspace-mb", type=click.IntRange(min=1), default=None,
              help="Limit TensorRT's builder workspace (default: TensorRT's, the GPU's memory).")
@click.option("--hardware-compat", type=click.Choice(["none", "ampere+", "same-cc"]), default="none",
              show_default=True, help="Engines run only on this GPU's architecture unless built for Ampere and newer "
                                      "GPUs (ampere+) or any GPU of this compute capability (same-cc); both may be "
                                      "slower.")
@click.option("--version-compatible", is_flag=True,
              help="Engines that newer TensorRT runtimes can load (they embed a lean runtime: host code that the "
                   "runner allows for them). May be slower.")
@click.option("--tf32", is_flag=True,
              help="Allow TF32 math in FP32 engines: faster, and gradients change (off by default).")
def command(artifact, graphs, precision, min_batch, opt_batch, max_batch, workspace_mb, hardware_compat,
            version_compatible, tf32):
    """Build native TensorRT engines for ARTIFACT's graphs on this GPU, into ARTIFACT/engines with a manifest
    entry each (TensorRT version, GPU, profile, digests). An engine runs only with the TensorRT version and GPU it
    was built for (see --version-compatible and --hardware-compat); run it with `--backend tensorrt`. A failed
    build changes nothing. Needs TensorRT and cuda-python (`pip install 'auditor-rt[gpu]'`)."""
    from auditor_rt.export.engines import BuildOptions, build_engines

    names = tuple(name.strip() for name in (graphs or "").split(",") if name.strip()) or None
    options = BuildOptions(graphs=names, precision=precision, min_batch=min_batch,
                           opt_batch=opt_batch if opt_batch is not None else max(min_batch, min(8, max_batch)),
                           max_batch=max_batch, workspace_mb=workspace_mb, hardware_compat=hardware_compat,
                           version_compatible=version_compatible, tf32=tf32)
    progress = _BuildProgress()
    try:
        entries = build_engines(artifact, options, report=progress)
    finally:
        progress.end()
    for entry in entries:
        flags = [f"hardware {entry.hardware_compat}"] * (entry.hardware_compat != "none")
        flags += ["version-compatible"] * entry.version_compatible + ["tf32"] * entry.tf32
        click.echo(f"engine     {entry.graph} {entry.precision}: {entry.file} (TensorRT {entry.tensorrt}, {entry.gpu} "
                   f"sm {entry.compute_capability}, batch {entry.profile['min_batch']}-{entry.profile['max_batch']}"
                   f"{''.join(', ' + flag for flag in flags)})")
