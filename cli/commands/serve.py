import click

from auditor_rt.cli.options import option_group, runner_options


_SETTINGS = (  # each a ServeSettings field
    click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
                 help="Images per model call, gathered from concurrent requests."),
    click.option("--max-delay-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
                 help="How long the first request of a batch waits for others."),
    click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
                 help="Requests that may wait for the model; past it, 503 with Retry-After at once."),
    click.option("--max-wait-ms", type=click.FloatRange(min=1), default=None,
                 help="Also refuse (503) a request that the measured throughput says would wait longer than this: "
                      "latency stays bounded under overload (default: only the queue bound)."),
    click.option("--timeout-ms", type=click.FloatRange(min=1), default=10_000, show_default=True,
                 help="Per-request deadline: a request that waited longer gets 504 and is dropped, not run."),
    click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=20.0, show_default=True,
                 help="Larger request bodies get 413 before they are read whole."),
    click.option("--max-pixels", type=click.IntRange(min=1), default=40_000_000, show_default=True,
                 help="Larger images get 413 before they are decoded (decompression bombs)."),
    click.option("--grace-s", type=click.FloatRange(min=0), default=30.0, show_default=True,
                 help="On SIGTERM: how long the requests in flight may take to finish."),
    click.option("--decode-workers", type=click.IntRange(min=1), default=4, show_default=True,
                 help="Decoder processes (a file that crashes one costs a 422, not the server), and the threads that "
                      "feed them and encode results off the event loop."),
    click.option("--decode-timeout-ms", type=click.FloatRange(min=1), default=5_000, show_default=True,
                 help="A decode that takes longer is stopped: 413 'too costly to decode'."),
    click.option("--formats", default="jpeg,png,webp,bmp,tiff,gif", show_default=True, metavar="LIST",
                 help="Image formats accepted, told by their bytes; others get 415 before any decoder runs. Choose "
                      "from jpeg, png, apng, webp, bmp, tiff, gif, jp2, pnm, pfm, hdr, sunras, avif, exr, or all."),
)


@click.command("serve")
@click.argument("artifact", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback without --token prints a warning.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar="AUDITOR_RT_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on /v1/* (or set AUDITOR_RT_TOKEN).")
@option_group("settings", lambda **values: values, *_SETTINGS)
@runner_options
def command(artifact, host, port, token, settings, runner):
    """Serve ARTIFACT over HTTP: POST /v1/audit with image bytes (or multipart with several) returns scores,
    regions and heatmaps; requests are batched dynamically, bounded by a queue, and drained on SIGTERM. Also
    GET /v1/info, /healthz, /readyz and /metrics (Prometheus)."""
    import time

    from auditor_rt.runtime.image_formats import parse_formats
    from auditor_rt.runtime.serve.server import bind_socket, require_uvicorn

    require_uvicorn()  # a runtime-only install says so before a model is loaded
    settings["formats"] = parse_formats(settings["formats"])
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.secho(f"warning: serving on {host} without --token: anyone who can reach this port can use it",
                    fg="yellow", err=True)
    sock = bind_socket(host, port)  # a busy port is one error line, before loading and before "serving"
    try:
        from auditor_rt.runtime.auditor import Auditor
        from auditor_rt.runtime.serve.app import AuditApp, ServeSettings
        from auditor_rt.runtime.serve.server import run_server

        serve = ServeSettings(token=token, **settings)
        auditor = Auditor.load(artifact, batch_size=serve.max_batch, **runner)  # checks every digest first
        app = AuditApp(auditor, serve)
        began = time.perf_counter()
        app.warm_up()
        runner = auditor.runner
        bound_port = sock.getsockname()[1]
        click.echo(f"serving {auditor.artifact.name} on http://{host}:{bound_port} "
                   f"({getattr(runner, 'name', 'runner')}: {', '.join(getattr(runner, 'active_providers', []))}); "
                   f"warm-up {(time.perf_counter() - began) * 1000:.0f} ms; max batch {serve.max_batch}, max "
                   f"delay {serve.max_delay_ms:g} ms, queue {serve.max_queue}", err=True)
        run_server(app, sock, log=lambda message: click.echo(message, err=True))
    finally:
        sock.close()
    click.echo("stopped", err=True)
