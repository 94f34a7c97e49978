"""Tabular RL: Q-learning, Sarsa and Sarsa(lambda) on envs with Discrete observations and actions.

The Q-table is a :class:`~shoal.agents.tabular.networks.QTable` module, so it is passed
to actors and checkpointed like any network; :mod:`shoal.agents.tabular.render` prints
it as text and plots it as a heat map with greedy arrows.
"""
