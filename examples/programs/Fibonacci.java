// Prints the first Fibonacci numbers using BigInteger.
import java.math.BigInteger;

public class Fibonacci {
    public static void main(String[] args) {
        BigInteger a = BigInteger.ZERO, b = BigInteger.ONE;
        for (int i = 0; i < 90; i++) {
            BigInteger next = a.add(b);
            a = b;
            b = next;
        }
        System.out.println("fib(90) = " + a);
    }
}
