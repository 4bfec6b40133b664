#!/usr/bin/env bash
# CoIN task 1/8: ScienceQA (variables: scripts/coin/train/coin_task.sh)
exec bash "$(dirname "$0")/coin_task.sh" 1 ScienceQA
