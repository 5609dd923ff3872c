from xfer.errors import DataError
from xfer.data.image import ImageDataModule
from xfer.data.render import RenderedTextDataModule
from xfer.data.spec import DataSpec
from xfer.data.text import TextDataModule

__all__ = ["DataError", "DataSpec", "ImageDataModule", "RenderedTextDataModule", "TextDataModule"]
