// Workers STATEDIR: a JVM with four worker threads sharing a lock; SIGUSR1 is taken by the JVM,
// so checks come through a file: the test creates STATEDIR/check and the main thread answers
// with "ok threads=N moved=true" once every worker advanced, and ticks the log meanwhile.
import java.nio.file.*;
import java.util.concurrent.atomic.AtomicLongArray;

public class Workers {
    public static void main(String[] args) throws Exception {
        Path dir = Paths.get(args[0]);
        AtomicLongArray counts = new AtomicLongArray(4);
        Object lock = new Object();
        for (int i = 0; i < 4; i++) {
            final int k = i;
            Thread t = new Thread(() -> {
                while (true) {
                    synchronized (lock) { counts.incrementAndGet(k); }
                    try { Thread.sleep(2 + k); } catch (InterruptedException e) { return; }
                }
            });
            t.setDaemon(true);
            t.start();
        }
        Path status = dir.resolve("status"), log = dir.resolve("log"), check = dir.resolve("check");
        StandardOpenOption[] app = {StandardOpenOption.CREATE, StandardOpenOption.APPEND};
        Files.writeString(status, "ready pid=" + ProcessHandle.current().pid() + "\n", app);
        for (long tick = 1;; tick++) {
            Files.writeString(log, "tick " + tick + "\n", app);
            Thread.sleep(20);
            if (Files.deleteIfExists(check)) {
                long[] before = new long[4];
                for (int i = 0; i < 4; i++) before[i] = counts.get(i);
                Thread.sleep(200);
                boolean moved = true;
                for (int i = 0; i < 4; i++) moved &= counts.get(i) > before[i];
                Files.writeString(status, (moved ? "ok" : "BAD") + " moved=" + moved + " threads="
                        + Thread.getAllStackTraces().size() + "\n", app);
            }
        }
    }
}
