//! `cohort-docs DIR`: write the man pages (DIR/man8) and the bash, zsh and
//! fish completions (DIR/completions) of cohortd and cohortctl, generated
//! from the same clap definitions as their parsers (packaging/install.sh).

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: cohort-docs DIR");
        std::process::exit(2)
    };
    match cohortd::cli::write_docs(std::path::Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
        }
        Err(e) => {
            eprintln!("cohort-docs: {e}");
            std::process::exit(1)
        }
    }
}
