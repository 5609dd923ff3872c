"""xfer: python train.py experiment=img2txt [overrides]  (see README.md)."""
from xfer.main import main

if __name__ == "__main__":
    main()
