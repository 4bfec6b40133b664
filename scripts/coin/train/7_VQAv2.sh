#!/usr/bin/env bash
# CoIN task 7/8: VQAv2 (variables: scripts/coin/train/coin_task.sh)
exec bash "$(dirname "$0")/coin_task.sh" 7 VQAv2
