// What each role may do, as docs/api.md "Roles" says. Buttons a role may not use
// are not rendered at all (the server refuses them anyway).

const RANK = { viewer: 0, 'restore-operator': 1, operator: 2, administrator: 3 };

const NEEDS = {
  restore: 'restore-operator', // browse points, start restores, stop restore sessions
  run: 'operator', // run/stop/enable/disable jobs, check repositories
  admin: 'administrator', // create/edit/delete repositories, shares, jobs; manage proxies
};

export function can(user, what) {
  if (!user) return false;
  return (RANK[user.role] ?? -1) >= RANK[NEEDS[what]];
}
