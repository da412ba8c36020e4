"""`python -m serving <command> [flags]`.

Commands:
  serve     run the model server (TF Serving's flags; see serving/flags.py)
  predict, status, ...
            client commands, implemented in serving/cli.py, which receives
            the whole argument list including the command name.
"""

import importlib.util
import sys
from typing import List, Optional


def _usage() -> str:
    """Every command: `serve` and each of serving/cli.py's, with its help."""
    from serving import cli  # pylint: disable=import-outside-toplevel
    commands = [('serve', 'run the model server (TF Serving\'s flags: '
                 'python -m serving serve --help)'), *cli.commands()]
    width = max(len(name) for name, _ in commands)
    return '\n'.join(
        ['usage: python -m serving <command> [flags]', '', 'commands:'] +
        [f'  {name:<{width}}  {text}' for name, text in commands] + [
            '', 'python -m serving <command> --help shows its flags and '
            'defaults.'
        ])


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatches to the server or, for any other command, to serving.cli."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == 'serve':
        from serving import server_main  # pylint: disable=import-outside-toplevel
        return server_main.main(argv[1:])
    if importlib.util.find_spec('serving.cli') is None:
        print(f'unknown command: {argv[0]}\n{_usage()}', file=sys.stderr)
        return 2
    from serving import cli  # pylint: disable=import-outside-toplevel
    return cli.main(argv)


if __name__ == '__main__':
    sys.exit(main())
