"""``auditor-rt serve``: an HTTP audit service (an ASGI app on uvicorn) with dynamic batching, backpressure and a
graceful drain; and ``AuditClient``, which gives the same ``AuditResult`` objects as a local ``Auditor``."""
