"""Thin routers of the messaging API: parse, authorise, call the store, answer."""
