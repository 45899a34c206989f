"""The ``effnet`` command. Arguments are parsed before anything heavy is imported, so
``effnet --help`` answers at once; each command imports the layers it needs when it runs."""


def main(argv: list[str] | None = None) -> int:
    from effnet.cli.main import main as run

    return run(argv)
