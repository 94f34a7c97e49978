"""h-DQN (Kulkarni et al. 2016): a meta-controller DQN chooses goals, a controller DQN acts to reach them."""
