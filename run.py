"""Entry point in a checkout: `python run.py method=ppp dataset=coco bits=64` (installed: `ppp-run ...`)."""

from ppp.cli import main

if __name__ == "__main__":
    main()
