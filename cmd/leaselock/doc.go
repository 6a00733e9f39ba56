// Command leaselock runs a program under a leaselock lock, for shell
// scripts, Jobs, CronJobs and init containers:
//
//	leaselock run NAME [--wait D] [--lease D] [--grace D] [--identity S] -- COMMAND [ARGS...]
//	leaselock status [NAME] [-o wide|json|yaml]
//	leaselock unlock NAME --force [--holder ID]
//
// run takes the lock NAME with withlock (a Lease of that name in the
// namespace), runs the command with the lock renewed, releases the lock when
// the command exits, and exits with the command's code; 75 when the lock
// stayed held past --wait, 124 when it was lost while the command ran (the
// command gets SIGTERM, then SIGKILL after --grace), 125 when leaselock
// itself failed, 126 and 127 when the command could not be started or
// found. It connects as kubectl does (--kubeconfig, --context, -n, or the
// Pod's ServiceAccount), and installed as kubectl-leaselock it is the
// kubectl plugin "kubectl leaselock". The README's "The leaselock command"
// gives the whole interface; docs/design.md how run handles signals and the
// end of its lock.
//
// What it does not promise: a command that ignores SIGTERM runs for up to
// --grace after its lock was lost; one whose leaselock was killed on a
// system other than Linux runs on without its lock; and, as with the
// library, a process paused past its lease can still write: fence such
// writes with $LEASELOCK_TOKEN.
package main
