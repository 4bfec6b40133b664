"""patches layer of llava_dymoe (see README, "Where things live")."""
