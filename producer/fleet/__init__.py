"""Following a plant's agents: one event loop for every agent of a process, a few transactional
lanes that commit many agents' parts together, and the consumer group that divides the plant's
agent list among producer processes (see `engine`, `lanes`, `follower`, `group`, `agents`)."""
