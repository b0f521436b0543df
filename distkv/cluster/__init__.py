"""Between nodes: the peer wire format, links, outboxes, anti-entropy, stability."""
