// The longest Collatz chain that starts below one million.
fn chain_length(mut n: u64) -> u32 {
    let mut steps = 1;
    while n != 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

fn main() {
    let (start, steps) = (1..1_000_000u64).map(|n| (n, chain_length(n))).max_by_key(|&(_, s)| s).unwrap();
    println!("longest chain below 1000000 starts at {start} ({steps} steps)");
}
