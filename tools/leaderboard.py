"""The clone's entry of :mod:`ssn_plugins.cli.leaderboard`, installed as ``ssn-leaderboard``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.leaderboard import main

if __name__ == "__main__":
    sys.exit(main())
