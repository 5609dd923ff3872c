"""xfer: does a network trained on one task help another, and which way of transferring it works best?"""
from xfer import resolvers

resolvers.register()
