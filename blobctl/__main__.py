"""The `blobctl` command and `python -m blobctl`.

The console script imports only this module at start, and the CLI inside main(): the
worker processes of a large put may be spawned (see encoder._worker_start_method), and a
spawned process imports the script that started its parent, which would otherwise load
typer and rich (~30 ms of CPU in each worker) for nothing."""


def main() -> None:
    from blobctl.cli import main as run

    run()


if __name__ == "__main__":
    main()
