"""The messaging API (accounts, devices, prekeys, queues, delivery). I/O shell over `crypto`."""
