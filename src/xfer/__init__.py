"""xfer: does a network trained on one task help another, and which way of transferring it works best?"""
from xfer import lazy_metrics

lazy_metrics.install()  # before anything imports Lightning, which imports torchmetrics

from xfer import resolvers  # noqa: E402

resolvers.register()
