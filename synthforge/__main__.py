"""``python -m synthforge``: the same CLI as the ``synthforge`` command."""

from synthforge.cli.main import main

if __name__ == "__main__":
    main()
