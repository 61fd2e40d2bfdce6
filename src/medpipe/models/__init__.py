"""Networks (plain nn.Modules) and the Lightning task modules that train them."""
