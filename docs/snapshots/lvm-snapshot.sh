#!/bin/sh
# Ferryman "command" snapshot provider for a folder on an LVM logical volume (example;
# adapt and test on your host).
#
#   ferryman share add home /srv/home --snapshot command \
#       --snapshot-create '/etc/ferryman/lvm-snapshot.sh create' \
#       --snapshot-delete '/etc/ferryman/lvm-snapshot.sh delete'
#
# The create command makes a snapshot volume of the logical volume holding the share,
# mounts it read-only and prints the share's folder inside it on its LAST line; the
# delete command unmounts and removes it. Both find the snapshot by its name
# (FERRYMAN_SNAPSHOT_NAME = ferryman-s<share>-t<task>), so the delete of a leftover
# from an interrupted run works even when FERRYMAN_SNAPSHOT_PATH is empty.
# Needs: lvcreate/lvremove, findmnt, mount; root. SNAP_SIZE: copy-on-write space
# reserved for changes during the backup (default 10%ORIGIN).
set -eu

action=${1:?usage: lvm-snapshot.sh create|delete}
share=${FERRYMAN_SHARE_PATH:?}
name=${FERRYMAN_SNAPSHOT_NAME:?}
mnt="/run/ferryman-snapshots/$name"

# the file system holding the share: its device, mount point and the share's path inside it
source=$(findmnt -n -o SOURCE --target "$share")
top=$(findmnt -n -o TARGET --target "$share")
vg=$(lvs --noheadings -o vg_name "$source" | tr -d ' ')
lv=$(lvs --noheadings -o lv_name "$source" | tr -d ' ')
[ -n "$vg" ] && [ -n "$lv" ] || { echo "$share is not on an LVM logical volume" >&2; exit 2; }

case $action in
create)
    lvcreate --snapshot --name "$name" --extents "${SNAP_SIZE:-10%ORIGIN}" "$vg/$lv" >&2
    mkdir -p "$mnt"
    # XFS needs nouuid to mount a snapshot next to its origin; ext4: noload skips the
    # journal replay a read-only mount of a snapshot cannot do
    fstype=$(findmnt -n -o FSTYPE --target "$share")
    opts=ro
    [ "$fstype" = xfs ] && opts=ro,nouuid
    [ "$fstype" = ext4 ] && opts=ro,noload
    mount -o "$opts" "/dev/$vg/$name" "$mnt"
    echo "$mnt${share#"$top"}"
    ;;
delete)
    if mountpoint -q "$mnt"; then umount "$mnt"; fi
    rmdir "$mnt" 2>/dev/null || true
    if lvs "$vg/$name" >/dev/null 2>&1; then
        lvremove --yes "$vg/$name" >&2
    fi
    ;;
*)
    echo "unknown action $action (create|delete)" >&2
    exit 2
    ;;
esac
