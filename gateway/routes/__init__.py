"""HTTP routes of the gateway: the JSON API, the stream socket and Grace's chat page."""
