"""R2D2 (Kapturowski et al. 2019): recurrent experience replay, on the local topology and distributed on Ape-X's."""
