#!/usr/bin/env bash
# CoIN task 5/8: VizWiz (variables: scripts/coin/train/coin_task.sh)
exec bash "$(dirname "$0")/coin_task.sh" 5 VizWiz
