"""The clone's entry of :mod:`ssn_plugins.cli.make_fashion_mnist_imagefolder`, installed as
``ssn-make-fashion-mnist-imagefolder`` (``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.make_fashion_mnist_imagefolder import main

if __name__ == "__main__":
    sys.exit(main())
