"""The versioned data: versions and the clock, the store, its digests."""
