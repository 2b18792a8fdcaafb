"""edgekit failover-test: break the VIP holder in realistic ways and measure what clients saw."""
