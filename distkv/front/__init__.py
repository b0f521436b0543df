"""What clients reach: the front door, the text and RESP protocols, the commands."""
