#!/bin/sh
# Ferryman "command" snapshot provider for a ZFS dataset (example; adapt and test on your host).
#
#   ferryman share add tank-data /tank/data --snapshot command \
#       --snapshot-create '/etc/ferryman/zfs-snapshot.sh create' \
#       --snapshot-delete '/etc/ferryman/zfs-snapshot.sh delete'
#
# Ferryman runs the create command before the backup and reads the folder printed on
# the LAST line of its output; it runs the delete command afterwards, also for
# snapshots left by an interrupted run (then FERRYMAN_SNAPSHOT_PATH may be empty:
# this script finds the snapshot by its name, never by the path).
# Environment: FERRYMAN_SHARE_PATH (the share's folder, the dataset's mount point),
# FERRYMAN_SNAPSHOT_NAME (ferryman-s<share>-t<task>), FERRYMAN_SNAPSHOT_PATH (delete).
# Needs: zfs(8), run as root (or with "zfs allow" snapshot,destroy,mount delegated).
set -eu

action=${1:?usage: zfs-snapshot.sh create|delete}
share=${FERRYMAN_SHARE_PATH:?}
name=${FERRYMAN_SNAPSHOT_NAME:?}

# the dataset mounted at the share's folder
dataset=$(zfs list -H -o name,mountpoint -t filesystem | awk -v m="$share" '$2 == m {print $1}')
[ -n "$dataset" ] || { echo "no ZFS dataset is mounted at $share" >&2; exit 2; }

case $action in
create)
    zfs snapshot "$dataset@$name"
    # snapshots are readable under the dataset's .zfs folder (also when snapdir=hidden)
    echo "$share/.zfs/snapshot/$name"
    ;;
delete)
    if zfs list -H -t snapshot "$dataset@$name" >/dev/null 2>&1; then
        zfs destroy "$dataset@$name"
    fi
    ;;
*)
    echo "unknown action $action (create|delete)" >&2
    exit 2
    ;;
esac
