"""The application shell: the ``d8mirror`` command line.

    main.py       parser root, exit codes, Prefect defaults (``d8mirror`` = :func:`main.main`)
    flags.py      flags several commands share (TLS, logins, credentials block, working dir)
    commands/     one module per subcommand: pull, push, upload/download, verify, setup
    session.py    what a run holds in the process: early API server, given credentials,
                  warm-up; closed when the command ends
    local_api.py  Prefect's ephemeral API server, started before Prefect is imported
    signals.py    Ctrl+C / SIGTERM as a graceful stop
    warmup.py     the pull and push warm-ups, run while the API server starts
    demo.py       the main job end to end on a local test bed (``python -m app.demo``)

The only code besides ``flows/`` and ``deployments/`` that imports ``tasks/`` and ``flows/``;
the core (``d8mirror/``) never imports it.
"""
