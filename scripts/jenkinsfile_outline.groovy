// The outline of a Jenkinsfile, as JSON on stdout, from Groovy's own parser.
//
//     groovy scripts/jenkinsfile_outline.groovy Jenkinsfile
//
// Jenkins runs pipelines on Groovy 2.4.21, the version Debian 12 ships, so a file
// this parser rejects is one Jenkins rejects too (exit 1, with the parser's
// message and line). The outline is every call made in the file (a directive or
// a step) with its line, its named arguments (and which of them are GStrings), how
// many other arguments it has, and the calls inside its closures; assignments are
// "=" entries. scripts/check_jenkinsfile.py checks it against the declarative
// pipeline's rules.
import groovy.json.JsonOutput
import org.codehaus.groovy.ast.expr.*
import org.codehaus.groovy.ast.stmt.*
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.MultipleCompilationErrorsException
import org.codehaus.groovy.control.Phases

def outline(Statement statement) {
    if (statement instanceof BlockStatement) {
        return statement.statements.collectMany { outline(it) }
    }
    if (statement instanceof ExpressionStatement && statement.expression instanceof BinaryExpression
            && statement.expression.operation.text == "=") {
        def assignment = statement.expression
        return [[name: "=", target: assignment.leftExpression.text, line: assignment.lineNumber, named: [],
                 interpolated: [], positional: 1, closure: false, body: calls(assignment.rightExpression)]]
    }
    if (statement instanceof ExpressionStatement) {
        return calls(statement.expression)
    }
    if (statement instanceof IfStatement) {
        return calls(statement.booleanExpression.expression) + outline(statement.ifBlock) + outline(statement.elseBlock)
    }
    if (statement instanceof ForStatement || statement instanceof WhileStatement) {
        return outline(statement.loopBlock)
    }
    return []
}

// The calls in an expression that are made on the script itself (directives and steps):
// `sh(...)`, `int x = sh(...)`, `x = readFile(...).readLines()`; a method of some
// object (`night.previousBuild`) is Groovy, not a step.
def calls(Expression expression) {
    if (expression instanceof DeclarationExpression) {
        return calls(expression.rightExpression)
    }
    if (expression instanceof BinaryExpression) {
        return calls(expression.leftExpression) + calls(expression.rightExpression)
    }
    if (expression instanceof PropertyExpression) {
        return calls(expression.objectExpression)
    }
    if (expression instanceof NotExpression || expression instanceof BooleanExpression) {
        return calls(expression.expression)
    }
    if (expression instanceof MethodCallExpression) {
        if (!expression.implicitThis) {
            return calls(expression.objectExpression)
        }
        return [call(expression)]
    }
    return []
}

def call(MethodCallExpression expression) {
    def named = []
    def interpolated = []  // named arguments whose value is a GString ("...${x}..."): built at run time
    def positional = 0
    def body = []
    def arguments = expression.arguments instanceof TupleExpression ? expression.arguments.expressions : []
    for (argument in arguments) {
        if (argument instanceof MapExpression) {
            for (entry in argument.mapEntryExpressions) {
                named << entry.keyExpression.text
                if (entry.valueExpression instanceof GStringExpression) {
                    interpolated << entry.keyExpression.text
                }
                body.addAll(calls(entry.valueExpression))
            }
        } else if (argument instanceof ClosureExpression) {
            body.addAll(outline(argument.code))
        } else {
            positional++
            body.addAll(calls(argument))
        }
    }
    return [name: expression.methodAsString, line: expression.lineNumber, named: named, interpolated: interpolated,
            positional: positional, closure: arguments.any { it instanceof ClosureExpression }, body: body]
}

def unit = new CompilationUnit()
unit.addSource(new File(args[0]))
try {
    unit.compile(Phases.CONVERSION)
} catch (MultipleCompilationErrorsException error) {
    System.err.println(error.message)
    System.exit(1)
}
def module = unit.AST.modules[0]
println JsonOutput.toJson(outline(module.statementBlock))
