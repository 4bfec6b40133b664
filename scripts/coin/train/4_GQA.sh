#!/usr/bin/env bash
# CoIN task 4/8: GQA (variables: scripts/coin/train/coin_task.sh)
exec bash "$(dirname "$0")/coin_task.sh" 4 GQA
