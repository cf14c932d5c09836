"""The clone's entry of :mod:`ssn_plugins.cli.train_net`, installed as ``ssn-train-net``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.train_net import main

if __name__ == "__main__":
    sys.exit(main())
