"""The clone's entry of :mod:`ssn_plugins.cli.train_fashion_mnist`, installed as ``ssn-train-fashion-mnist``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.train_fashion_mnist import main

if __name__ == "__main__":
    sys.exit(main())
