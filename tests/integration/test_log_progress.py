"""The progress bar that follows a training subprocess's log file (base stage of the demo and the study)."""
import threading
import time

from llava_dymoe.integration.log_progress import follow_log, last_count


def _tqdm_line(done, total):
    return f"\r {100 * done // total:3d}%|####      | {done}/{total} [00:0{done % 10}<00:01,  3.10it/s]"


def test_last_count_takes_the_newest_count_of_the_given_total(tmp_path):
    log = tmp_path / "train.log"
    assert last_count(str(log)) is None  # not written yet
    log.write_text("loading\n" + _tqdm_line(3, 20) + _tqdm_line(4, 20) + "\nMap: " + _tqdm_line(7, 9) + "\n")
    assert last_count(str(log)) == (7, 9)
    assert last_count(str(log), total=20) == (4, 20)
    assert last_count(str(log), total=21) is None
    # only the tail is read: a count far back is forgotten once the log has grown past it
    log.write_text(_tqdm_line(1, 20) + "x" * 10000)
    assert last_count(str(log), total=20) is None


def test_follow_log_mirrors_a_log_written_while_the_block_runs(tmp_path):
    log = tmp_path / "train.log"
    seen = []

    def writer():
        with open(log, "w") as f:
            for k in range(1, 11):
                f.write(_tqdm_line(k, 10))
                f.flush()
                time.sleep(0.02)

    with follow_log(str(log), 10, "base", interval=0.01) as bar:
        t = threading.Thread(target=writer)
        t.start()
        while t.is_alive():
            seen.append(bar.n)
            time.sleep(0.005)
        t.join()
    assert bar.n == 10  # the final count is read once more after the block
    assert seen == sorted(seen) and max(seen) <= 10
    with follow_log(str(log), 10, "off", enabled=False) as none:
        assert none is None
