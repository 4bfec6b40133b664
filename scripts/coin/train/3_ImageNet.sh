#!/usr/bin/env bash
# CoIN task 3/8: ImageNet (variables: scripts/coin/train/coin_task.sh)
exec bash "$(dirname "$0")/coin_task.sh" 3 ImageNet
