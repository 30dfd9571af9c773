"""`python -m deepfm`: the `deepfm` command, as a module torchrun can start (`torchrun ... -m deepfm train`)."""

import sys

from deepfm.cli import main

if __name__ == "__main__":
    sys.exit(main())
