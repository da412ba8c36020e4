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

_USAGE = """usage: python -m serving <command> [flags]

commands:
  serve     run the model server (python -m serving serve --help)
  predict   send a request to a running server (serving.cli)
  status    show model status (serving.cli)
"""


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatches to the server or, for any other command, to serving.cli."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(_USAGE)
        return 0 if argv else 2
    if argv[0] == 'serve':
        from serving import server_main  # pylint: disable=import-outside-toplevel
        return server_main.main(argv[1:])
    if importlib.util.find_spec('serving.cli') is None:
        print(f'unknown command: {argv[0]}\n{_USAGE}', file=sys.stderr)
        return 2
    from serving import cli  # pylint: disable=import-outside-toplevel
    return cli.main(argv)


if __name__ == '__main__':
    sys.exit(main())
